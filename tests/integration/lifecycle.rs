//! Stop and start with 100,000 queued messages: after a crash the daemon
//! accepts and delivers while it rescans the spool files; a clean stop is
//! quick and the next start trusts the index.
//!
//! The queue is filled by `mta-seed` (benches/src/seed.rs) straight through
//! mta-spool: every message for `seed@localhost` (a local domain, so
//! delivery is a Maildir), a few due now, the rest due hours from now.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::{bin, message, wait_until, Client, Workdir};

const QUEUED: u64 = 100_000;
/// Seeded messages due at once (spread evenly over the ids).
const DUE: u64 = 20;
/// Spool files read per second by the rescan: 100,000 files take about
/// 5 s, long enough to deliver while it runs.
const RESCAN_RATE: u64 = 20_000;

fn init(work: &Workdir, args: &[&str]) -> Output {
    Command::new(bin("mta-init"))
        .arg("--config")
        .arg(work.config_path())
        .args(args)
        .env_remove("MTA_CONFIG")
        .output()
        .expect("run mta-init")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `mta-init status --json`'s `daemon` object.
fn status(work: &Workdir) -> serde_json::Value {
    let o = init(work, &["status", "--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert!(v["daemon"].is_object(), "no daemon status: {v}");
    v["daemon"].clone()
}

/// Polls the status (every 200 ms: each poll runs mta-init) until `f`
/// holds; returns that status.
fn wait_status(
    work: &Workdir,
    what: &str,
    limit: Duration,
    mut f: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let began = Instant::now();
    loop {
        let daemon = status(work);
        if f(&daemon) {
            return daemon;
        }
        assert!(
            began.elapsed() < limit,
            "timed out waiting for {what}: {daemon}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn rescan_running(daemon: &serde_json::Value) -> bool {
    daemon["spool_open"]["rescan"]["running"] == true
}

fn queued(daemon: &serde_json::Value) -> u64 {
    daemon["queued"].as_u64().expect("queued")
}

/// Fills the queue directory with `messages` deferred messages, `due` of
/// them due now; `--unclean` leaves it as after a crash.
fn seed(queue: &Path, messages: u64, due: u64, unclean: bool) -> Duration {
    let began = Instant::now();
    let mut cmd = Command::new(bin("mta-seed"));
    cmd.arg("--queue-dir")
        .arg(queue)
        .args(["--messages", &messages.to_string()])
        .args(["--due", &due.to_string()])
        .args(["--size", "1024", "--recipient", "seed@localhost"]);
    if unclean {
        cmd.arg("--unclean");
    }
    let o = cmd.output().expect("run mta-seed");
    assert!(o.status.success(), "mta-seed failed: {}", text(&o));
    eprintln!("{}", String::from_utf8_lossy(&o.stdout).trim());
    began.elapsed()
}

fn maildir_new(work: &Workdir, user: &str) -> PathBuf {
    work.path()
        .join("maildir/localhost")
        .join(user)
        .join("Maildir/new")
}

fn count_files(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.count() as u64)
}

fn start(work: &Workdir) -> Duration {
    let began = Instant::now();
    let o = init(work, &["start", "--wait", "60"]);
    assert!(o.status.success(), "{}", text(&o));
    began.elapsed()
}

/// `mta-init stop`, timed.
fn stop(work: &Workdir) -> Duration {
    let began = Instant::now();
    let o = init(work, &["stop", "--wait", "60"]);
    let took = began.elapsed();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("mtad stopped"), "{}", text(&o));
    took
}

/// Removes the spool files of a stopped queue, the buckets in parallel.
fn remove_buckets(queue: &Path) -> std::thread::JoinHandle<()> {
    let msg = queue.join("msg");
    std::thread::spawn(move || {
        let buckets: Vec<PathBuf> = std::fs::read_dir(&msg)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        std::thread::scope(|scope| {
            for bucket in &buckets {
                scope.spawn(move || {
                    let _ = std::fs::remove_dir_all(bucket);
                });
            }
        });
    })
}

/// Kills whatever mtad a failing test leaves running.
struct StopOnDrop<'a>(&'a Workdir);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.0.queue().join("mtad.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            if !init(self.0, &["stop", "--wait", "20"]).status.success() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn config(work: &Workdir) {
    // write_config opens [spool] right before `extra`.
    work.write_config("", &format!("rescan_rate = {RESCAN_RATE}\n"));
}

#[test]
fn stop_and_start_with_100000_queued_messages() {
    let began = Instant::now();
    let work = Workdir::new();
    config(&work);
    let seeding = seed(&work.queue(), QUEUED, DUE, true);
    eprintln!("seeded {QUEUED} messages (unclean) in {seeding:?}");
    let _guard = StopOnDrop(&work);

    // (a) An unclean start: ready at once, the rescan in the background.
    let ready = start(&work);
    let daemon = status(&work);
    assert_eq!(daemon["spool_open"]["clean"], false, "{daemon}");
    assert!(
        rescan_running(&daemon),
        "the rescan should still be running right after the start: {}",
        daemon["spool_open"]
    );
    let addr: SocketAddr = daemon["listen"][0].as_str().unwrap().parse().unwrap();

    // While it runs: new mail is accepted and delivered...
    let mut c = Client::connect(addr);
    c.cmd("EHLO client.test", "250");
    let r = c.send_message(
        "a@b.test",
        &["user@localhost"],
        &message("during the rescan"),
    );
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    c.cmd("QUIT", "221");
    let fresh = maildir_new(&work, "user");
    wait_until(
        "the new message in the Maildir",
        Duration::from_secs(20),
        || count_files(&fresh) == 1,
    );
    // ... and so is seeded mail that was due.
    let seeded = maildir_new(&work, "seed");
    wait_until(
        "a seeded due message in the Maildir",
        Duration::from_secs(20),
        || count_files(&seeded) >= 1,
    );
    let daemon = status(&work);
    assert!(
        rescan_running(&daemon),
        "the deliveries should have happened while the rescan ran (make RESCAN_RATE smaller?): {}",
        daemon["spool_open"]
    );
    eprintln!(
        "unclean start: ready after {ready:?}; delivered during the rescan ({} of {} files read)",
        daemon["spool_open"]["rescan"]["files_done"], daemon["spool_open"]["rescan"]["files_total"]
    );

    // Then the rescan completes, every due message is delivered and the
    // rest is still queued.
    let last = wait_status(
        &work,
        "the end of the rescan",
        Duration::from_secs(60),
        |d| !rescan_running(d),
    );
    let rescan = &last["spool_open"]["rescan"];
    assert_eq!(rescan["files_done"], rescan["files_total"], "{rescan}");
    assert_eq!(rescan["files_total"], QUEUED, "{rescan}");
    wait_until(
        "every due message in the Maildir",
        Duration::from_secs(30),
        || count_files(&seeded) == DUE,
    );
    wait_status(&work, "the queue count", Duration::from_secs(10), |d| {
        queued(d) == QUEUED - DUE
    });
    eprintln!("rescan took {} ms", rescan["elapsed_ms"]);

    // (b) A clean stop with the queue full, timed; the next start trusts
    // the index and finds every message.
    let stop_full = stop(&work);
    let ready = start(&work);
    let daemon = status(&work);
    assert_eq!(
        daemon["spool_open"]["clean"], true,
        "{}",
        daemon["spool_open"]
    );
    assert!(
        daemon["spool_open"]["rescan"].is_null(),
        "no rescan after a clean stop: {}",
        daemon["spool_open"]
    );
    assert_eq!(
        daemon["spool_open"]["rescanned"], 0,
        "{}",
        daemon["spool_open"]
    );
    assert_eq!(queued(&daemon), QUEUED - DUE);
    let stop_full_again = stop(&work);
    // Unlinking 100,000 files takes a while: one thread per bucket, while
    // the small queue below runs (the TempDir then has little left to do).
    let removal = remove_buckets(&work.queue());

    // The same stop with a 10-message queue.
    let small = Workdir::new();
    config(&small);
    seed(&small.queue(), 10, 0, false);
    let _small_guard = StopOnDrop(&small);
    start(&small);
    assert_eq!(queued(&status(&small)), 10);
    let stop_small = stop(&small);
    removal.join().expect("removal thread");

    eprintln!(
        "mta-init stop with {} queued: {stop_full:?} (after the rescan), {stop_full_again:?} \
         (after a clean start, ready in {ready:?}); with 10 queued: {stop_small:?}; test took {:?}",
        QUEUED - DUE,
        began.elapsed()
    );
}
