//! `mta-init stop`: ask for a clean stop and report while it happens.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mta_config::Config;
use mta_control::{Request, Response};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::process::{liveness, probe, Daemon, Liveness, NotPermitted};
use crate::wording::{count, noun};

/// Stops the daemon and waits until its process is gone.
pub fn run(config: &Config, wait: Duration) -> Result<()> {
    run_with(config, &Request::Stop, wait)
}

/// Sends a stop request (a stop or a graceful stop) and waits until the
/// process is gone, printing what the stop waits for.
pub fn run_with(config: &Config, request: &Request, wait: Duration) -> Result<()> {
    let pid_file = config.pid_file();
    let pid = match probe(config) {
        Daemon::NotRunning => {
            println!("mtad is not running");
            return Ok(());
        }
        Daemon::Dead(pid) => {
            println!(
                "mtad is not running; removing stale PID file {} (pid {pid})",
                pid_file.display()
            );
            std::fs::remove_file(&pid_file).ok();
            return Ok(());
        }
        // Never guess: a live daemon's PID file stays where it is.
        Daemon::NotPermitted(e) => return Err(e.into()),
        Daemon::Answering(status) => status.pid as i32,
        Daemon::Silent { pid, .. } => pid,
    };
    let began = Instant::now();
    // The daemon's last word on the stop comes on the same connection,
    // once the queue is saved: read it beside the progress reports.
    let mut last_word = None;
    match mta_control::call_open(&config.control_socket(), request, Duration::from_secs(5)) {
        Ok((Response::Ok, mut answers)) => {
            println!("stopping mtad (pid {pid}): new connections get 421");
            last_word = Some(std::thread::spawn(move || match answers.next(wait) {
                Ok(Response::Stopped(stop)) => Some(stop),
                _ => None,
            }));
        }
        Ok((Response::Forbidden { message }, _)) => {
            return Err(NotPermitted::Refused(message).into())
        }
        other => {
            // The control socket is the clean way; SIGTERM is the fallback
            // every daemon understands.
            let other = other.map(|(response, _)| response);
            println!("control socket did not take the stop ({other:?}); sending SIGTERM to {pid}");
            match kill(Pid::from_raw(pid), Signal::SIGTERM) {
                Err(Errno::EPERM) => {
                    return Err(NotPermitted::Running {
                        pid,
                        why: "kill: operation not permitted".into(),
                    }
                    .into())
                }
                result => result.context("sending SIGTERM")?,
            }
        }
    }

    let mut last_report = Instant::now() - Duration::from_secs(1);
    let mut last_seen = None;
    while liveness(pid) != Liveness::Gone {
        if began.elapsed() > wait {
            bail!(
                "mtad (pid {pid}) is still running after {:.1} s; it may be stuck, see its log",
                began.elapsed().as_secs_f64()
            );
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            if let Ok(status) = crate::status::query(config) {
                report_progress(&status);
                last_seen = status.stop.or(last_seen);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The process is gone, so is the connection: the reader has ended.
    if let Some(stop) = last_word.and_then(|reader| reader.join().ok().flatten()) {
        last_seen = Some(stop);
    }
    if std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == pid.to_string()) {
        // mtad removes it on a clean exit; if it did not, it did not exit
        // cleanly, but it is gone, so the file is stale either way.
        std::fs::remove_file(&pid_file).ok();
    }
    match last_seen {
        Some(stop) if stop.index_not_saved.is_some() => println!(
            "mtad stopped in {:.1} s, but its queue index could not be saved ({}): the {} queued {} kept in their spool files and the next start rebuilds the index from them (a rescan); {} spilled from memory",
            began.elapsed().as_secs_f64(),
            stop.index_not_saved.as_deref().unwrap_or_default(),
            stop.queued,
            noun(stop.queued, "message is", "messages are"),
            stop.messages_spilled
        ),
        Some(stop) => println!(
            "mtad stopped in {:.1} s: {} {} on disk, {} spilled from memory",
            began.elapsed().as_secs_f64(),
            stop.queued,
            noun(
                stop.queued,
                "message queued with its retry schedule",
                "messages queued with their retry schedules"
            ),
            stop.messages_spilled
        ),
        None => println!("mtad stopped in {:.1} s", began.elapsed().as_secs_f64()),
    }
    Ok(())
}

/// One line of what a stop still waits for.
pub fn report_progress(status: &mta_control::Status) {
    if let Some(stop) = &status.stop {
        println!(
            "  waiting: {} open ({} in a transaction), {} in flight, {} spilled, {:.1} s elapsed, session deadline {:.0} s",
            count(stop.sessions_open, "session", "sessions"),
            stop.sessions_in_transaction,
            count(stop.deliveries_in_flight, "delivery", "deliveries"),
            count(stop.messages_spilled, "message", "messages"),
            stop.elapsed_ms as f64 / 1000.0,
            stop.deadline_ms as f64 / 1000.0
        );
    }
}
