//! `mta-init status`: the table and the LSB exit codes.

use std::process::ExitCode;
use std::time::Duration;

use mta_config::Config;
use mta_control::{
    DaemonState, IndexOrigin, LastStop, Request, Response, ServiceState, SpoolOpen, Status,
};
use serde::Serialize;

use crate::process::{probe, Daemon};
use crate::wording::{count, humanize};

/// LSB exit codes for status (LSB Core, "Init Script Actions").
pub const RUNNING: u8 = 0;
/// The PID file exists but the process is gone.
pub const DEAD_PID_FILE: u8 = 1;
/// Not running.
pub const NOT_RUNNING: u8 = 3;
/// Running, but it did not answer; or this user may not tell.
pub const UNKNOWN: u8 = crate::process::EXIT_NOT_PERMITTED;

/// Overall state, as the last line shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    Up,
    Down,
    Degraded,
    /// This user may not tell.
    Unknown,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Report<'a> {
    overall: Overall,
    running: bool,
    pid: Option<i32>,
    pid_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon: Option<&'a Status>,
}

/// Asks the daemon for its status.
pub fn query(config: &Config) -> Result<Status, String> {
    match mta_control::call(
        &config.control_socket(),
        &Request::Status,
        Duration::from_secs(5),
    ) {
        Ok(Response::Status(status)) => Ok(*status),
        Ok(other) => Err(format!("unexpected answer: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `mta-init status`: the control socket first, then the PID file.
pub fn run(config: &Config, json: bool) -> ExitCode {
    let pid_file = config.pid_file().display().to_string();
    let (overall, pid, running, status, problem, code) = match probe(config) {
        Daemon::Answering(status) => (
            overall_of(&status),
            Some(status.pid as i32),
            true,
            Some(status),
            None,
            RUNNING,
        ),
        Daemon::Silent { pid, why } => (
            Overall::Degraded,
            Some(pid),
            true,
            None,
            Some(format!(
                "mtad (pid {pid}) is running but does not answer: {why}"
            )),
            UNKNOWN,
        ),
        Daemon::NotPermitted(e) => (
            Overall::Unknown,
            e.pid(),
            e.pid().is_some(),
            None,
            Some(e.to_string()),
            UNKNOWN,
        ),
        Daemon::Dead(pid) => (
            Overall::Down,
            Some(pid),
            false,
            None,
            Some(format!(
                "mtad is dead but PID file {pid_file} exists (pid {pid})"
            )),
            DEAD_PID_FILE,
        ),
        Daemon::NotRunning => (Overall::Down, None, false, None, None, NOT_RUNNING),
    };
    if json {
        let report = Report {
            overall,
            running,
            pid,
            pid_file,
            problem,
            daemon: status.as_deref(),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        match &status {
            Some(status) => print_table(status),
            None => println!("mtad: {}", problem.as_deref().unwrap_or("not running")),
        }
        println!();
        println!("OVERALL STATUS: {}", overall_word(overall));
    }
    ExitCode::from(code)
}

fn overall_of(status: &Status) -> Overall {
    let all_up = status.services.iter().all(|s| s.state == ServiceState::Up);
    if status.state == DaemonState::Running && all_up {
        Overall::Up
    } else {
        Overall::Degraded
    }
}

fn overall_word(o: Overall) -> &'static str {
    match o {
        Overall::Up => "up",
        Overall::Down => "down",
        Overall::Degraded => "degraded",
        Overall::Unknown => "unknown",
    }
}

fn state_word(s: ServiceState) -> &'static str {
    match s {
        ServiceState::Up => "up",
        ServiceState::Down => "down",
        ServiceState::Draining => "draining",
        ServiceState::Paused => "paused",
        ServiceState::Degraded => "degraded",
    }
}

/// The human table, in the spirit of GreenArrow's `hvmail_init status`.
pub fn print_table(status: &Status) {
    let state = match status.state {
        DaemonState::Running => "running",
        DaemonState::Stopping => "stopping",
    };
    println!(
        "mtad {} (pid {}) {state}, up {}",
        status.version,
        status.pid,
        humanize(Duration::from_secs(status.uptime_secs))
    );
    println!();
    println!("SERVICES");
    // Each column as wide as its widest entry: `bounce-runner` and
    // `draining` must not push the columns after them out of line.
    let name_width = status
        .services
        .iter()
        .map(|s| s.name.len())
        .chain(["SERVICE".len()])
        .max()
        .unwrap_or_default();
    let state_width = status
        .services
        .iter()
        .map(|s| state_word(s.state).len())
        .chain(["STATE".len()])
        .max()
        .unwrap_or_default();
    println!(
        "  {:<name_width$}  {:<state_width$}  DETAIL",
        "SERVICE", "STATE"
    );
    for s in &status.services {
        println!(
            "  {:<name_width$}  {:<state_width$}  {}",
            s.name,
            state_word(s.state),
            s.detail
        );
    }
    println!();
    println!("QUEUE");
    if !status.runners.is_empty() {
        println!(
            "  {:<7} {:<8} {:>9} {:>9} {:>6} {:>8} {:>14} {:>9} {:>10} {:>9} {:>7}",
            "QUEUE",
            "RUNNER",
            "MESSAGES",
            "IN FLIGHT",
            "LIMIT",
            "OLDEST",
            "SCHEDULE SAVED",
            "ATTEMPTS",
            "DELIVERED",
            "DEFERRED",
            "FAILED"
        );
        for r in &status.runners {
            let service = status
                .services
                .iter()
                .find(|s| s.name == format!("{}-runner", r.name));
            let state = match (r.started, service.map(|s| s.state)) {
                (false, _) => "stopped",
                (true, Some(ServiceState::Down)) => "down",
                (true, _) if r.paused => "paused",
                (true, _) => "running",
            };
            let oldest = r
                .oldest_age_secs
                .map(|s| humanize(Duration::from_secs(s)))
                .unwrap_or_else(|| "-".to_owned());
            let saved = match r.schedule_saved_ms_ago {
                Some(ms) if r.schedule_unsaved_changes == 0 => {
                    format!("yes, {} ago", humanize(Duration::from_millis(ms)))
                }
                Some(ms) => format!("{} ago", humanize(Duration::from_millis(ms))),
                None => "not yet".to_owned(),
            };
            println!(
                "  {:<7} {:<8} {:>9} {:>9} {:>6} {:>8} {:>14} {:>9} {:>10} {:>9} {:>7}",
                r.name,
                state,
                r.messages,
                r.in_flight,
                r.limit,
                oldest,
                saved,
                r.attempts,
                r.delivered,
                r.deferred,
                r.failed
            );
        }
        println!();
    }
    println!("  messages queued:      {}", status.queued);
    print_nonzero(&[
        (
            "in memory only:",
            status.in_memory,
            format!("{} (volatile: not yet on disk)", status.in_memory),
        ),
        (
            "corrupt files:",
            status.corrupt_files,
            format!("{} set aside in corrupt/ since start", status.corrupt_files),
        ),
        ("messages held:", status.held, status.held.to_string()),
    ]);
    if !status.paused_domains.is_empty() {
        println!(
            "  paused domains:       {}",
            status.paused_domains.join(", ")
        );
    }
    for b in &status.backoffs {
        let left = b.until.saturating_sub(mta_envelope::unix_now());
        println!(
            "  backed off:           {} for {} more ({})",
            b.key,
            humanize(Duration::from_secs(left)),
            b.cause
        );
    }
    print_nonzero(&[
        (
            "notices dropped:",
            status.dsns_dropped,
            format!(
                "{} (reports on failed mail from <> that the postmaster did not get either; see the daemon log)",
                status.dsns_dropped
            ),
        ),
        (
            "delivery log:",
            status.delivery_log_dropped,
            format!(
                "{} could not be written",
                count(status.delivery_log_dropped, "line", "lines")
            ),
        ),
    ]);
    println!("  accepted since start: {}", status.accepted_total);
    println!("  sessions open:        {}", status.sessions_open);
    if status.smtp_refused.total() > 0 {
        let causes: Vec<String> = status
            .smtp_refused
            .by_cause()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(cause, n)| format!("{cause} {n}"))
            .collect();
        println!("  smtp refused:         {}", causes.join(", "));
    }
    if status.reloads > 0 {
        println!("  graceful restarts:    {}", status.reloads);
    }
    println!("  last stop:            {}", last_stop(&status.spool_open));
    if let Some(rescan) = &status.spool_open.rescan {
        let percent = if rescan.files_total == 0 {
            100.0
        } else {
            rescan.files_done as f64 * 100.0 / rescan.files_total as f64
        };
        println!(
            "  rescan:               {} {}/{} ({percent:.0}%), {} added, {:.1} s",
            if rescan.running { "running," } else { "done," },
            rescan.files_done,
            count(rescan.files_total, "spool file", "spool files"),
            count(rescan.messages_added, "message", "messages"),
            rescan.elapsed_ms as f64 / 1000.0
        );
    }
}

/// The `last stop` line: how the last run ended and, when the index was
/// not the one a clean stop saved, what became of it. "clean" alone means
/// the index (histories, holds, paused domains) is as that stop left it.
fn last_stop(open: &SpoolOpen) -> String {
    let stop = match open.last_stop {
        Some(LastStop::New) => return "none: a new queue".to_owned(),
        Some(LastStop::Clean) => "clean",
        Some(LastStop::NotClean) => "not clean",
        // A daemon older than these fields.
        None if open.clean => "clean",
        None => "not clean",
    };
    let index = match open.index {
        None | Some(IndexOrigin::Trusted | IndexOrigin::Created) => return stop.to_owned(),
        Some(IndexOrigin::Checked) => {
            return format!("{stop}: the index is checked against the spool files");
        }
        Some(IndexOrigin::Missing) => "the index was missing: rebuilt from the spool files",
        Some(IndexOrigin::Replaced) => {
            "the index was not the one that stop saved: rebuilt from the spool files"
        }
        Some(IndexOrigin::Damaged) => {
            "the index was damaged (set aside as index.damaged-*): rebuilt from the spool files"
        }
        Some(IndexOrigin::Unavailable) => {
            "the index could not be opened for want of space: rebuilt once space is back"
        }
    };
    let joint = if stop == "clean" { "but" } else { "and" };
    format!("{stop}, {joint} {index}")
}

/// Lines of the daemon's figures shown only when their figure is not
/// zero: (label, figure, the line's text).
fn print_nonzero(lines: &[(&str, u64, String)]) {
    for (label, figure, text) in lines {
        if *figure > 0 {
            println!("  {label:<22}{text}");
        }
    }
}
